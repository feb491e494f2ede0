"""tf.distribute on a CPU-only machine: mirrored on virtual CPU devices, two localhost workers, speed switches."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import warnings
from dataclasses import replace
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
import yaml

from tests.helpers import run, tiny_params, tool_env, write_params
from trainwell.errors import ParamsError
from trainwell.params import load_params
from trainwell.stages import audit, build, demo_data, split, train
from trainwell.training import distribute, fit, network
from trainwell.training.inputs import BatchSpec, batch_bounds, make_eval_dataset, make_train_dataset

# Every distributed run happens in a fresh `trainwell train` process: devices and
# MultiWorkerMirroredStrategy must be configured before TensorFlow starts.


def _train_params(**train_overrides) -> dict:
    params = tiny_params(images_per_class=80, image_size=32, epochs=10)
    params["data"]["dir"] = params["paths"]["demo_dir"]
    params["train"].update({"batch_size": 32, "learning_rate": 0.002, **train_overrides})
    return params


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project with 400 demo images (32x32) audited, split and cached; copy it before writing."""
    root = tmp_path_factory.mktemp("distribute")
    write_params(root, _train_params())
    before = Path.cwd()
    os.chdir(root)
    try:
        assert demo_data.main() == 0 and audit.main() == 0 and split.main() == 0 and build.main() == 0
    finally:
        os.chdir(before)
    return root


def _copy_project(project: Path, target: Path, **train_overrides) -> Path:
    shutil.copytree(project, target)
    write_params(target, _train_params(**train_overrides))
    return target


def _weights(folder: Path) -> list[np.ndarray]:
    return keras.models.load_model(folder / load_params(folder / "params.yaml").paths.model).get_weights()


def _validation_accuracy(folder: Path) -> float:
    """The last epoch's validation accuracy, as `train` logged it (evaluate runs no strategy: no need to start it)."""
    log = folder / load_params(folder / "params.yaml").paths.train_log_dir / "metrics.json"
    return json.loads(log.read_text())["validation"]["accuracy"]


def test_replica_slices_partition_every_global_batch():
    images = np.arange(70, dtype=np.uint8).reshape(70, 1, 1, 1).repeat(3, axis=3)
    labels = np.arange(70) % 5
    spec = BatchSpec(num_classes=5, batch_size=16, seed=1, first_epoch=0, epochs=2)
    single = [batch[0][:, 0, 0, 0].numpy().tolist() for batch in make_train_dataset(images=images, labels=labels,
                                                                                     spec=spec)]
    # Two workers with two replicas each: worker p yields slices 2p and 2p+1 of each global batch.
    workers = [
        [batch[0][:, 0, 0, 0].numpy().tolist() for batch in make_train_dataset(
            images=images, labels=labels, spec=replace(spec, replicas=4, pipeline=p, pipelines=2))]
        for p in (0, 1)
    ]
    assert len(single) == 2 * 5  # 70 = 4 x 16 + 6 per epoch; 6 >= 4 replicas, so kept as its own batch
    for step, batch in enumerate(single):
        slices = workers[0][2 * step : 2 * step + 2] + workers[1][2 * step : 2 * step + 2]
        assert sum(slices, []) == batch
        assert all(slices) and max(map(len, slices)) - min(map(len, slices)) <= 1


def test_small_remainder_joins_the_batch_before():
    assert batch_bounds(count=66, batch_size=16, replicas=1).tolist() == [0, 16, 32, 48, 64, 66]
    # 2 left over cannot feed 4 replicas (an empty replica batch is a 0/0 NaN loss in Keras).
    assert batch_bounds(count=66, batch_size=16, replicas=4).tolist() == [0, 16, 32, 48, 66]
    with pytest.raises(Exception, match="cannot give each of 4 replicas"):
        batch_bounds(count=3, batch_size=16, replicas=4)


def test_eval_slices_cover_the_split_once():
    images = np.arange(21, dtype=np.uint8).reshape(21, 1, 1, 1).repeat(3, axis=3)
    seen = []
    for pipeline in (0, 1):
        dataset = make_eval_dataset(images=images, labels=np.zeros(21, int), spec=BatchSpec(
            num_classes=5, batch_size=8, replicas=2, pipeline=pipeline, pipelines=2))
        assert dataset.cardinality().numpy() == 3
        seen += [value for batch in dataset for value in batch[0][:, 0, 0, 0].numpy().tolist()]
    assert sorted(seen) == list(range(21))


@pytest.mark.train
def test_mirrored_on_two_cpu_devices_trains_like_default(project, tmp_path):
    default = _copy_project(project, tmp_path / "default")
    mirrored = _copy_project(project, tmp_path / "mirrored", strategy="mirrored", cpu_devices=2)
    run(["trainwell", "train"], cwd=default)
    result = run(["trainwell", "train"], cwd=mirrored)
    assert "mirrored strategy over 2 replicas; global batch 32" in result.stdout
    assert "ran out of data" not in result.stderr
    # Same global batches, gradients averaged over the two replicas: the same training up to
    # float summation order, not merely a similar accuracy.
    for a, b in zip(_weights(default), _weights(mirrored)):
        np.testing.assert_allclose(a, b, atol=2e-3)
    accuracy_default, accuracy_mirrored = _validation_accuracy(default), _validation_accuracy(mirrored)
    assert accuracy_default >= 0.6 and abs(accuracy_default - accuracy_mirrored) <= 0.03


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for handle in sockets:
        handle.bind(("127.0.0.1", 0))
    ports = [handle.getsockname()[1] for handle in sockets]
    for handle in sockets:
        handle.close()
    return ports


def _run_two_workers(folders: list[Path], command: str) -> list[tuple[str, str]]:
    """`trainwell COMMAND` as two workers of one cluster on 127.0.0.1, each in its own folder; their output."""
    cluster = {"worker": [f"127.0.0.1:{port}" for port in _free_ports(2)]}
    processes = []
    for index, folder in enumerate(folders):
        env = tool_env()
        env["TF_CONFIG"] = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        processes.append(subprocess.Popen([sys.executable, "-m", "trainwell", command], cwd=folder, env=env,
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outputs = []
    for process in processes:
        try:
            outputs.append(process.communicate(timeout=240))
        finally:
            process.kill()
    for process, (stdout, stderr) in zip(processes, outputs):
        assert process.returncode == 0, f"worker exited {process.returncode}\n{stdout}\n{stderr}"
    return outputs


@pytest.mark.train
@pytest.mark.parametrize("memory_budget_mb", [4096, 0], ids=["in memory", "streamed"])
def test_two_localhost_workers_train_to_the_same_weights(project, tmp_path, memory_budget_mb):
    # Each worker gets its own copy of the project, as two machines would have.
    folders = [_copy_project(project, tmp_path / f"worker{index}", strategy="multi_worker", epochs=2,
                             memory_budget_mb=memory_budget_mb) for index in (0, 1)]
    outputs = _run_two_workers(folders, "train")
    for stdout, _ in outputs:
        assert "multi_worker strategy over 2 replicas; global batch 32" in stdout
    for a, b in zip(_weights(folders[0]), _weights(folders[1])):
        np.testing.assert_array_equal(a, b)
    if memory_budget_mb == 0:
        # Streamed, the training split is sharded by shard (each worker reads its own 16-image
        # shards, 16 images a step), so the batches differ from one device's: only agreement counts.
        for stdout, _ in outputs:
            assert "2 workers shard the streamed training split by shard" in stdout
            assert "16 images a step" in stdout and "streaming the val split" in stdout
        assert all(np.isfinite(weights).all() for weights in _weights(folders[0]))
        return
    # Two workers of one replica each split every global batch in two: the same training as
    # one device on whole batches, up to float summation order.
    single = _copy_project(project, tmp_path / "single", epochs=2)
    run(["trainwell", "train"], cwd=single)
    for a, b in zip(_weights(single), _weights(folders[0])):
        np.testing.assert_allclose(a, b, atol=1e-3)


@pytest.mark.tf_process
def test_a_cluster_gets_a_heartbeat_that_survives_busy_cores():
    # TensorFlow's own 10 s heartbeat timeout failed a two-worker run on two loaded cores; the
    # coordination service must be configured (before the strategy) with trainwell's, once.
    script = textwrap.dedent("""
        import json, os
        os.environ["TF_CONFIG"] = json.dumps({"cluster": {"worker": ["127.0.0.1:1", "127.0.0.1:2"]},
                                              "task": {"type": "worker", "index": 1}})
        from tensorflow.python.eager import context
        from trainwell.training.tensorflow_internals import configure_cluster_heartbeat
        configure_cluster_heartbeat(heartbeat_timeout_s=120)
        configure_cluster_heartbeat(heartbeat_timeout_s=5)  # a second call keeps the first configuration
        config = context.context().coordination_service
        print(json.dumps({"timeout_ms": config.heartbeat_timeout_in_ms, "leader": config.service_leader,
                          "jobs": [(job.name, job.num_tasks) for job in config.coordinated_job_list]}))
    """)
    result = subprocess.run([sys.executable, "-c", script], env=tool_env(), capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    config = json.loads(result.stdout.strip().splitlines()[-1])
    assert config == {"timeout_ms": 120_000, "leader": "/job:worker/replica:0/task:0", "jobs": [["worker", 2]]}
    assert distribute.HEARTBEAT_TIMEOUT_S >= 60


@pytest.mark.tf_process
def test_multi_worker_without_tf_config_says_what_to_set(project, tmp_path):
    folder = _copy_project(project, tmp_path / "alone", strategy="multi_worker")
    env = tool_env()
    env.pop("TF_CONFIG", None)
    result = subprocess.run(["trainwell", "train"], cwd=folder, env=env, capture_output=True, text=True)
    assert result.returncode == 2
    assert "TF_CONFIG" in result.stderr and "Scaling out" in result.stderr


def _read_until(stream, text: str, timeout_s: float) -> str:
    """Lines of `stream` up to the first holding `text` (a reader thread, so a silent process cannot hang the test)."""
    import queue
    import threading

    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in stream], daemon=True).start()
    seen = ""
    while text not in seen:
        seen += lines.get(timeout=timeout_s)
    return seen


@pytest.mark.tf_process
def test_a_worker_alone_says_whom_it_waits_for_a_second_with_its_index_exits_2_and_sigterm_stops_it(project, tmp_path):
    folder = _copy_project(project, tmp_path / "alone", strategy="multi_worker")
    ports = _free_ports(2)
    env = tool_env()
    env["TF_CONFIG"] = json.dumps({"cluster": {"worker": [f"127.0.0.1:{port}" for port in ports]},
                                   "task": {"type": "worker", "index": 0}})
    env["TRAINWELL_PEER_TIMEOUT"] = "300"
    alone = subprocess.Popen(["trainwell", "train"], cwd=folder, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        said = _read_until(alone.stdout, f"waiting for worker 1 at 127.0.0.1:{ports[1]}", timeout_s=120)
        assert f"worker 0 of 2 (port {ports[0]})" in said and "TRAINWELL_PEER_TIMEOUT" in said
        # A second worker given the same index finds the port taken: a usage error naming both.
        twin = subprocess.run(["trainwell", "train"], cwd=folder, env=env, capture_output=True, text=True, timeout=120)
        assert twin.returncode == 2, twin.stderr
        assert f"port {ports[0]}, this worker's (worker 0 in TF_CONFIG" in twin.stderr
        assert "same task index" in twin.stderr and "internal error" not in twin.stderr
        alone.send_signal(signal.SIGTERM)
        assert alone.wait(timeout=30) == 143
        assert "stopped by SIGTERM" in alone.stderr.read()
    finally:
        alone.kill()
        alone.wait()
    with socket.create_server(("", ports[0])):  # the port is free again
        pass


@pytest.mark.tf_process
def test_sigterm_stops_a_worker_after_tensorflow_started_its_cluster(tmp_path):
    # TensorFlow's preemption notifier takes SIGTERM when the cluster starts and only logs it (a
    # bare MultiWorkerMirroredStrategy process outlives it); make_strategy gives it back.
    script = tmp_path / "worker.py"
    script.write_text(textwrap.dedent("""
        import sys, time
        from trainwell import stopping
        from trainwell.training import distribute
        stopping.stop_on_signals()
        replicas = distribute.make_strategy("multi_worker").num_replicas_in_sync
        try:
            print("replicas", replicas, flush=True)
            time.sleep(120)
        except stopping.Stopped:
            print("stopped", flush=True)
    """))
    env = tool_env()
    env["TF_CONFIG"] = json.dumps({"cluster": {"worker": [f"127.0.0.1:{_free_ports(1)[0]}"]},
                                   "task": {"type": "worker", "index": 0}})
    worker = subprocess.Popen([sys.executable, str(script)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        assert worker.stdout is not None and worker.stdout.readline() == "replicas 1\n"
        worker.send_signal(signal.SIGTERM)
        stdout, stderr = worker.communicate(timeout=30)
        assert worker.returncode == 0 and stdout == "stopped\n", stderr[-2000:]
    finally:
        worker.kill()
        worker.wait()


def test_cpu_devices_under_multi_worker_is_refused_before_tensorflow_starts():
    with pytest.raises(ParamsError, match=r"train\.cpu_devices=2 splits one machine's CPU"):
        distribute.configure_cpu_devices(2, strategy="multi_worker")


def test_mirrored_on_one_device_says_it_is_the_default_at_a_cost(capsys):
    if len(tf.config.list_logical_devices("CPU")) != 1 or tf.config.list_logical_devices("GPU"):
        pytest.skip("this process already split its CPU, or has GPUs")
    assert distribute.make_strategy("mirrored").num_replicas_in_sync == 1
    said = capsys.readouterr().err
    assert "has one device" in said and "train.cpu_devices: 2 or more" in said


@pytest.mark.train
@pytest.mark.parametrize(
    "switches",
    [
        {"mixed_precision": "mixed_float16"},
        {"mixed_precision": "mixed_bfloat16", "jit_compile": True},
        {"steps_per_execution": 3},
    ],
    ids=["mixed_float16", "bfloat16+xla", "steps_per_execution"],
)
def test_speed_switches_train_on_cpu_with_a_float32_softmax(built, switches, capsys):
    params = tiny_params()
    params["train"].update(switches)
    write_params(built, params)
    assert keras.mixed_precision.dtype_policy().name == "float32"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert train.main() == 0
    output = capsys.readouterr().out
    # Keras silently drops XLA while op determinism is on; train turns determinism off for it.
    assert not [warning for warning in caught if "jit_compile" in str(warning.message)]
    if switches.get("steps_per_execution"):
        # 30 training images in batches of 8 = 4 steps, 15 validation = 2: 3 would straddle epochs.
        assert "steps_per_execution 2 instead of 3" in output
        assert not [warning for warning in caught if "ran out of data" in str(warning.message)]
    # The global policy is left as it was for whatever runs next in this process.
    assert keras.mixed_precision.dtype_policy().name == "float32"
    model = keras.models.load_model(load_params().paths.model, compile=False)
    assert model.outputs[0].dtype == "float32" and model.layers[-1].compute_dtype == "float32"
    if "mixed_precision" in switches:
        assert model.get_layer("conv1").compute_dtype == switches["mixed_precision"].split("_")[1]
    assert fit.weights_are_finite(model)
    assert "0 guard incident(s)" in output


def test_cpu_devices_after_tensorflow_started_is_a_clear_error():
    from trainwell.errors import ParamsError
    from trainwell.training.distribute import configure_cpu_devices

    tf.constant(1.0)  # TensorFlow is running in this process now
    with pytest.raises(ParamsError, match="fresh process"):
        configure_cpu_devices(len(tf.config.list_logical_devices("CPU")) + 1)



@pytest.mark.train
def test_one_device_strategy_path_runs_on_cpu():
    """The path `default` takes on a GPU (OneDeviceStrategy: batches prefetched onto the device),
    pointed at the CPU so it runs here: fit() consumes the per-device dataset and trains."""
    from trainwell.params import TrainParams
    from trainwell.training.distribute import distribute_dataset

    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    data = np.random.default_rng(0).integers(0, 255, size=(40, 16, 16, 3), dtype=np.uint8)
    labels = np.arange(40) % 5
    with strategy.scope():
        model = network.build_network(train=TrainParams(), num_classes=5, image_size=16)
        network.compile_model(model=model, train=TrainParams(learning_rate=0.01))
    spec = BatchSpec(num_classes=5, batch_size=8, seed=0, first_epoch=0, epochs=2)
    dataset = distribute_dataset(strategy, lambda **shard: make_train_dataset(
        images=data, labels=labels, spec=replace(spec, **shard)))
    assert isinstance(dataset, tf.distribute.DistributedDataset)
    before = [weight.copy() for weight in model.get_weights()]
    history = model.fit(dataset, epochs=2, steps_per_epoch=5, verbose=0)
    assert len(history.history["loss"]) == 2 and all(np.isfinite(history.history["loss"]))
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights()))


@pytest.mark.train
def test_a_remainder_too_small_for_every_replica_still_trains(project, tmp_path):
    # 200 training images in global batches of 199 on 2 replicas: the last image cannot feed both
    # replicas, so it joins the first batch (one step of 200). The coverage check must count that
    # batch as it is, not as 1 x 199, which would report an image dropped.
    folder = _copy_project(project, tmp_path / "remainder", strategy="mirrored", cpu_devices=2, batch_size=199,
                           epochs=1)
    result = run(["trainwell", "train"], cwd=folder)
    assert "epochs 1-1 over 200 training and 100 validation images" in result.stdout


def _review_project(project: Path, target: Path, **train_overrides) -> Path:
    folder = _copy_project(project, target, **train_overrides)
    params = yaml.safe_load((folder / "params.yaml").read_text())
    params["label_review"].update(folds=2, epochs_per_fold=2)
    write_params(folder, params)
    return folder


def _review(folder: Path) -> tuple[np.ndarray, list[str]]:
    """A finished review's out-of-fold probabilities and its flagged files, most suspicious first."""
    report = folder / load_params(folder / "params.yaml").paths.label_report_dir
    with (report / "suspects.csv").open(newline="") as handle:
        flagged = [row["path"] for row in csv.DictReader(handle)]
    return np.load(report / "out_of_fold_probabilities.npy"), flagged


@pytest.mark.train
def test_label_review_runs_under_the_training_strategies_with_the_same_results(project, tmp_path):
    """Fold models train under train.strategy as `train` does: two logical CPU devices (mirrored)
    and two localhost workers give one device's out-of-fold probabilities, up to float summation
    order, and the same suspects."""
    single = _review_project(project, tmp_path / "single")
    run(["trainwell", "label-review"], cwd=single)
    probabilities, flagged = _review(single)
    mirrored = _review_project(project, tmp_path / "mirrored", strategy="mirrored", cpu_devices=2)
    run(["trainwell", "label-review"], cwd=mirrored)
    workers = [_review_project(project, tmp_path / f"worker{index}", strategy="multi_worker") for index in (0, 1)]
    _run_two_workers(workers, "label-review")
    for folder in (mirrored, *workers):
        other_probabilities, other_flagged = _review(folder)
        np.testing.assert_allclose(other_probabilities, probabilities, atol=2e-3)
        assert other_flagged == flagged
    # Both workers score every image, not only their share, and agree to the bit.
    np.testing.assert_array_equal(_review(workers[0])[0], _review(workers[1])[0])
