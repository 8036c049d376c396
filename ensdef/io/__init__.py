"""Input and output at the edges: the one image decoder and its limits, shared by the service and the
command line (:mod:`validation`), the bounded JSON parser (:mod:`bounded_json`) and the untrusting ``.npy``
reader (:mod:`npy`) it uses, the gRPC schema and its generated modules (:mod:`proto`), and a small gRPC
client (:mod:`client`)."""
