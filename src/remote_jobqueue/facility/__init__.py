"""The development facility: a real HTCondor pool, XRootD origin and caches, and an OIDC issuer.

Everything here runs on one machine: the hub side in the root network namespace on a private
bridge, and each remote site in a network namespace of its own that can only dial out, as a
site behind NAT does.
"""
