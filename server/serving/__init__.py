"""``fedcare serve``: one signed release behind the Open Inference Protocol (KServe v2).

``grpc_api`` (grpcio, ``inference.GRPCInferenceService``) and ``rest_api`` (Starlette on
uvicorn, the ``/v2`` endpoints) share ``protocol`` (decoding tensors, metadata, the access log)
and ``keys`` (hashed API keys); ``server`` starts both over TLS on a bundle that
:func:`fedcare.bundle.load_bundle` verified. Nothing is imported here: a caller that needs only
the keys file does not load grpc or torch.
"""
