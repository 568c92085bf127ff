"""The live runtime: the trained policy driving real Deployments through the Kubernetes API.

``app.build_agent`` assembles it from the Hydra config; ``scripts/run_agent.py``
runs it. ``kube_client`` is the only module that imports the ``kubernetes``
client, and ``safety`` contains every rule a decision passes before a write.
"""
