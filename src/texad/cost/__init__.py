"""What a config costs before it runs (``texad cost``) and what a GPU achieves (``texad gpu-check``).

:mod:`~texad.cost.networks` builds the paper-size networks with an example input and their train and inference
steps; :mod:`~texad.cost.flops` counts their FLOPs (``torch.utils.flop_counter``, on the meta device);
:mod:`~texad.cost.memory` measures the CPU peak; :mod:`~texad.cost.plan_cost` multiplies per rule by the jobs,
steps and images of a :class:`texad.plan.Plan`; :mod:`~texad.cost.devices` turns FLOPs into GPU-hours.
"""
