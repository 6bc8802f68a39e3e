"""Deploy step (behind the evaluation gate): the released model as a TorchServe service."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def deploy(
    release: Input[Model],
    dataset: Input[Dataset],
    served: Output[Model],
    source: str,
    version: str,
    store: str = "",
    target: str = "local",
    serve_dir: str = "",
    overrides: list = [],  # noqa: B006 - KFP parameters are declared with literal defaults
) -> str:
    """Archive the release's serving bundle for TorchServe (.mar + card with its sha256 +
    the pod's config.properties), publish it to STORE/models/<name>/<version>/serving/, then
    roll it out. target 'kubernetes' patches the serving workload (serve.kube_*);
    'local' starts TorchServe in serve_dir and sends it one test recording; 'none' stops
    after the store. Returns the inference URL (local), else the archive's store URI."""
    from pathlib import Path

    from sempair.config import load_config
    from sempair.serving.archive import build_archive
    from sempair.serving.deploy import (
        KubeAPI,
        check_target,
        pod_config,
        publish_archive,
        rollout,
        smoke_media,
        smoke_test,
    )
    from sempair.serving.server import start_server

    cfg = load_config(None, overrides)
    check_target(target, store)
    name = cfg.pipeline.model_name
    archive = build_archive(Path(release.path) / "serving", served.path, name=name,
                            version=version)
    pod_config(served.path, cfg.serve, name=name, mar_file=archive.path.name)
    served.metadata.update({"sha256": archive.sha256, "version": version, "target": target})
    uri = publish_archive(served.path, store, name, version) if store else ""
    if uri:
        served.metadata["uri"] = uri
        print(f"published {archive.path.name} (sha256 {archive.sha256}) to {uri}")
    if target == "kubernetes":
        api = KubeAPI.in_cluster(cfg.serve.kube_namespace)
        rollout(api, cfg.serve.kube_workload, uri, archive.sha256)
        print(f"rolled {cfg.serve.kube_workload} in {api.namespace} to {uri}")
        return uri
    if target == "local":
        running = start_server(archive.path, Path(serve_dir or Path(served.path).parent /
                                                  "torchserve"), cfg.serve, name=name)
        media = smoke_media(dataset.path, source, Path(served.path).parent / "smoke")
        result = smoke_test(running.inference_url, running.token, running.model_name, media)
        served.metadata.update({"inference_url": running.inference_url,
                                "workdir": str(running.workdir)})
        print(f"serving {name} {version} at {running.inference_url}; smoke test on "
              f"{media.name}: {len(result['clips'])} clips, {result['summary']}")
        return running.inference_url
    return uri
