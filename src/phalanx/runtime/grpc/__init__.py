"""The gRPC runtime: protocol ``phalanx.v1`` between a coordinator and client processes.

``serde`` is the only module that touches the generated protobuf code (``proto/``);
``session`` holds the plain types of the calls beside the v1 contract of ``core.messages``;
``assembly`` puts chunked tensor streams back together; ``errors`` is the one catalogue of
gRPC status codes; ``servicer`` decodes, calls a plain ``handlers.CoordinatorHandlers``,
encodes. Importing this package imports no grpc.
"""
