"""netlock: proves, enforces and watches that a workstation cannot reach the internet.

facts.py collects (thin adapters: netlink, psutil, nft, DNS, probes), checks.py judges (pure
functions over the facts), firewall.py renders and loads the nftables ruleset, watch.py
re-verifies on netlink events and on a timer. floor_agent/simulated/network.py builds the
namespace topologies of the tests and the demo.
"""
