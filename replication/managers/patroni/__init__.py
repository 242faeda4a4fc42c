"""The Patroni manager: Patroni agents elect, promote, rewind and rejoin over etcd.

``local`` drives agents that replikit runs as local processes (``agents``: etcd members, the
agents and their REST API); ``containers`` observes the agents of the compose HA variant,
which run in their containers out of replikit's reach; ``config`` writes every agent's
configuration, for both.
"""
