#!/bin/sh
# Configure this node's role from the environment, then run the command (condor_master -f).
#   RJQ_ROLE        central-manager (collector, negotiator, schedd) | execute
#   RJQ_CONDOR_HOST the central manager's address
#   RJQ_SITE        the site's name (SiteName of the execute node's slots)
#   RJQ_CPUS, RJQ_MEMORY_MB    the execute node's size
#   RJQ_ROUTER      a site behind NAT: its NAT router (the default route), and CCB, so the
#                   schedd reaches the node through the connection the node opened
#   RJQ_UNREACHABLE on the hub side: the sites' networks, which this node has no way into
#                   (an unreachable route: a try fails at once, and no packet goes elsewhere)
# A file mounted at /etc/condor/config.d/90-facility.conf (tokens, SciTokens, tuning) wins.
set -eu
conf=/etc/condor/config.d/50-rjq-role.conf
{
    echo "CONDOR_HOST = ${RJQ_CONDOR_HOST:-\$(FULL_HOSTNAME)}"
    echo "UID_DOMAIN = ${RJQ_UID_DOMAIN:-rjq.test}"
    echo "TRUST_UID_DOMAIN = true"
    echo "SOFT_UID_DOMAIN = true"
    case "${RJQ_ROLE:-execute}" in
        central-manager)
            echo "use ROLE : CentralManager"
            echo "use ROLE : Submit"
            ;;
        execute)
            echo "use ROLE : Execute"
            echo "SiteName = \"${RJQ_SITE:-LOCAL}\""
            echo "STARTD_ATTRS = \$(STARTD_ATTRS) SiteName"
            echo "NUM_CPUS = ${RJQ_CPUS:-2}"
            echo "MEMORY = ${RJQ_MEMORY_MB:-2048}"
            echo "SLOT_TYPE_1 = 100%"
            echo "SLOT_TYPE_1_PARTITIONABLE = true"
            echo "NUM_SLOTS_TYPE_1 = 1"
            if [ -n "${RJQ_ROUTER:-}" ]; then
                echo "CCB_ADDRESS = \$(COLLECTOR_HOST)"
            fi
            ;;
        *) echo "unknown RJQ_ROLE ${RJQ_ROLE}" >&2; exit 2 ;;
    esac
    # Containers: no mount or PID namespaces for jobs inside them.
    echo "MOUNT_UNDER_SCRATCH ="
    echo "USE_PID_NAMESPACES = false"
} > "$conf"
if [ -n "${RJQ_ROUTER:-}" ]; then
    ip route replace default via "$RJQ_ROUTER"
fi
for net in ${RJQ_UNREACHABLE:-}; do
    ip route replace unreachable "$net"
done
exec "$@"
