"""Transport security of a cluster: the kit's own CA, the certificates it issues, the check
that refuses bad ones before anything starts, and the client side (an SSL context that
verifies like ``sslmode=verify-full``)."""
