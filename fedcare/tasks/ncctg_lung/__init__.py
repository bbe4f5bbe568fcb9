"""Time to death on the NCCTG lung-cancer trial, federated across its institutions.

A second embedded federation (issue #14), of a different kind than heart disease: a
discrete-time survival model on 227 patients from 18 institutions merged into six sites. This
package is the task's standalone core (data and sites, model and per-patient loss, metrics,
non-federated baselines); README.md in this folder states every choice and its reason.
"""

from __future__ import annotations
