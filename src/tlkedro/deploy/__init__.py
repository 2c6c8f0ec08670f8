"""Deployment: run the pipelines on Slurm (``kedro slurm``) or Argo Workflows (``kedro argo``).

``grouping`` splits a pipeline into node groups (a variant is one group), ``config`` validates
``conf/<env>/deploy.yml``, ``slurm`` and ``argo`` turn the groups into jobs or a Workflow, and
``cli`` holds the Kedro project commands.
"""
