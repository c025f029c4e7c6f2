#!/bin/sh
# A site's NAT router. RJQ_SITE_SUBNET: the site's network (e.g. 10.213.81.0/24);
# RJQ_HUB_SUBNET (optional): the only network the site may reach (default: anywhere).
# Needs NET_ADMIN and net.ipv4.ip_forward=1 (compose: cap_add, sysctls).
set -eu
: "${RJQ_SITE_SUBNET:?set RJQ_SITE_SUBNET to the site network}"
towards=""
if [ -n "${RJQ_HUB_SUBNET:-}" ]; then
    towards="ip daddr ${RJQ_HUB_SUBNET}"
fi
nft -f - <<NFT
table ip rjq_nat {
    chain forward {
        type filter hook forward priority 0; policy drop;
        ct state established,related accept
        ip saddr ${RJQ_SITE_SUBNET} ${towards} accept
    }
    chain postrouting {
        type nat hook postrouting priority 100;
        ip saddr ${RJQ_SITE_SUBNET} ip daddr != ${RJQ_SITE_SUBNET} masquerade
    }
}
NFT
echo "NAT for ${RJQ_SITE_SUBNET}: outbound only, towards ${RJQ_HUB_SUBNET:-anywhere}"
exec sleep infinity
