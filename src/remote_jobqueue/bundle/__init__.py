"""The job bundle: what runs at the site as the cluster's scheduler job.

It starts a `distributed` scheduler on the site network, dials the gateway and reverse-forwards
the scheduler and dashboard ports, and runs the site agent that submits and removes worker jobs
at the same site.
"""
