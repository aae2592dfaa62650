"""One local Ray (two CPUs, no dashboard, 200 MB object store) for all scale tests."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="package")
def local_ray():
    ray = pytest.importorskip("ray")
    import scale_fakes

    # the fake encoder lives in a test module the workers cannot import: ship it by value,
    # and register the model spec ``fake:tiny`` in every worker (and here) for the CLI
    ray.cloudpickle.register_pickle_by_value(scale_fakes)
    scale_fakes.register_fake_backend()
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        object_store_memory=200 * 1024 * 1024,
        ignore_reinit_error=True,
        log_to_driver=False,
        runtime_env={"worker_process_setup_hook": scale_fakes.register_fake_backend},
    )
    yield ray
    ray.shutdown()
    from lexlens.models import registry

    registry.BACKENDS.pop("fake", None)
