"""Input and output at the edges: the one image decoder and its limits, shared by the service and the
command line (:mod:`validation`), the gRPC schema and its generated modules (:mod:`proto`), and a small gRPC
client (:mod:`client`)."""
