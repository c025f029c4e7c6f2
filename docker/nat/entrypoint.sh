#!/bin/sh
# RJQ_SITE_SUBNET: the site's network (e.g. 10.213.81.0/24). Needs NET_ADMIN and
# net.ipv4.ip_forward=1 (compose: cap_add, sysctls).
set -eu
: "${RJQ_SITE_SUBNET:?set RJQ_SITE_SUBNET to the site network}"
nft -f - <<NFT
table ip rjq_nat {
    chain forward {
        type filter hook forward priority 0; policy drop;
        ct state established,related accept
        ip saddr ${RJQ_SITE_SUBNET} accept
    }
    chain postrouting {
        type nat hook postrouting priority 100;
        ip saddr ${RJQ_SITE_SUBNET} ip daddr != ${RJQ_SITE_SUBNET} masquerade
    }
}
NFT
echo "NAT for ${RJQ_SITE_SUBNET}: outbound only"
exec sleep infinity
