"""Who moves the primary: one package per manager behind :class:`base.ClusterManager`."""
