"""Validated rollouts: gate, shadow, canary steps with automated analysis, promotion and rollback.

``controller.RolloutController`` runs one rollout per model over the repository's seams
(``ModelRepository.load_candidate / add_version / retire_version`` and the ``primary`` and
``canary`` overrides of a ``ModelEntry``) and the data plane's observer hook; ``state`` lives in
``driftserve.core.rollout_state``; ``gate`` scores a candidate before traffic; ``analysis`` judges
each step on live per-version samples; ``discovery`` polls the repository for new versions.
"""
