"""The development facility: a real HTCondor pool, XRootD origin and caches, and an OIDC issuer.

Everything here runs on one machine: the hub side in the root network namespace on a private
bridge, and each remote site in a network namespace of its own that can only dial out, as a
site behind NAT does.

Development only, so a distribution of its own (``remote-jobqueue-facility``, installed by the
product's ``[dev]`` extra): the ``remote_jobqueue`` wheel carries none of it and never imports it.
Its command line is ``remote-jobqueue facility ...`` (an entry point of the product's command
line) or, the same group, ``remote-jobqueue-facility ...``.
"""
