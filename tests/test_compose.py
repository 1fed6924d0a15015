"""There is no Docker engine here: parse docker-compose.yml and check it agrees with the settings."""

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]


def env_example() -> dict[str, str]:
    lines = (ROOT / ".env.example").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def settings_variables() -> set[str]:
    source = (ROOT / "lorasite" / "settings.py").read_text()
    return set(re.findall(r'env_(?:str|bool|int|list)\("([A-Z0-9_]+)"', source))


def command_of(service: str) -> str:
    command = SERVICES[service]["command"]
    return command if isinstance(command, str) else " ".join(command)


GPU_WORKERS = ("worker-gpu-wan", "worker-gpu-flux")


def test_services_present():
    expected = {"web", "proxy", *GPU_WORKERS, "worker", "beat", "redis", "postgres", "minio", "createbucket"}
    assert expected <= set(SERVICES)


NGINX_SIZE_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def nginx_directives() -> dict[str, str]:
    """The proxy's `name value;` lines (the config is flat enough for this; the last one of a name wins)."""
    text = (ROOT / "deploy" / "nginx.conf").read_text()
    lines = (line.split("#", 1)[0].strip() for line in text.splitlines())
    return dict(line.rstrip(";").split(None, 1) for line in lines if line.endswith(";") and " " in line)


def test_a_buffering_proxy_is_the_only_way_to_gunicorn():
    proxy = SERVICES["proxy"]
    assert proxy["image"].startswith("nginx:")
    assert "./deploy/nginx.conf:/etc/nginx/conf.d/default.conf:ro" in proxy["volumes"]
    assert proxy["ports"] == ["8000:80"] and proxy["depends_on"]["web"]["condition"] == "service_healthy"
    assert "ports" not in SERVICES["web"], "gunicorn must not be reachable around the proxy"
    assert SERVICES["web"]["expose"] == ["8000"]
    directives = nginx_directives()
    assert (
        directives["proxy_pass"] == "http://lorasite_web"
        and "server web:8000" in (ROOT / "deploy" / "nginx.conf").read_text()
    )
    # The whole request is read before gunicorn sees it, and the answer is taken from gunicorn at once.
    assert directives["proxy_request_buffering"] == "on" and directives["proxy_buffering"] == "on"
    assert int(directives["client_body_timeout"].rstrip("s")) < 120  # below gunicorn's --timeout
    assert "/healthz" in " ".join(proxy["healthcheck"]["test"])


def test_proxy_body_limit_matches_the_largest_lora():
    from django.conf import settings

    size = nginx_directives()["client_max_body_size"]
    limit = int(size.rstrip("kmg")) * NGINX_SIZE_UNITS[size[-1] if size[-1] in "kmg" else ""]
    # The largest LoRA plus at most 1 MiB of multipart form fields around it.
    assert settings.LORASITE_MAX_LORA_BYTES < limit <= settings.LORASITE_MAX_LORA_BYTES + 1024**2


def test_worker_commands_match_the_celery_queues():
    from lorasite.celery import app

    queues = {q.name for q in app.conf.task_queues}
    named = set(re.search(r"-Q (\S+)", command_of("worker")).group(1).split(","))
    assert named == {"default"} <= queues
    assert "celery -A lorasite beat" in command_of("beat")
    assert "gunicorn lorasite.wsgi:application" in command_of("web")


def test_flower_watches_the_broker_on_localhost_only():
    flower = SERVICES["flower"]
    assert command_of("flower").startswith("celery flower") and flower["env_file"] == ".env"
    assert flower["ports"] == ["127.0.0.1:5555:5555"] and "redis" in flower["depends_on"]


def test_gpu_workers_serve_different_known_models_through_gpu_worker():
    from generation.model_registry import model_registry

    served = [SERVICES[service]["environment"]["LORASITE_WORKER_MODELS"].split(",") for service in GPU_WORKERS]
    assert served == [["wan22-t2v-a14b"], ["flux1-dev"]]
    assert all(model_registry()[key].enabled for keys in served for key in keys)
    for service in GPU_WORKERS:
        # gpu_worker computes -Q from LORASITE_WORKER_MODELS; a fixed -Q would contradict it.
        assert command_of(service).startswith("python manage.py gpu_worker -- ") and "-Q" not in command_of(service)
        node = re.search(r"-n (\S+)@%h", command_of(service)).group(1)
        assert f"{node}@$$HOSTNAME" in SERVICES[service]["healthcheck"]["test"]
        assert SERVICES[service]["environment"]["LORASITE_MODELS_DIR"] == "/models"
        assert "./models:/models:ro" in SERVICES[service]["volumes"]


def test_each_gpu_worker_reserves_an_nvidia_device():
    for service in GPU_WORKERS:
        devices = SERVICES[service]["deploy"]["resources"]["reservations"]["devices"]
        assert devices[0]["driver"] == "nvidia" and devices[0]["count"] == 1 and "gpu" in devices[0]["capabilities"]


def test_healthchecks_and_volumes():
    for service in ("web", "redis", "postgres", "minio"):
        assert "healthcheck" in SERVICES[service], service
    assert {"postgres-data", "redis-data", "minio-data"} <= set(COMPOSE["volumes"])
    assert "/healthz" in " ".join(SERVICES["web"]["healthcheck"]["test"])


def test_env_example_variables_are_read_by_settings_or_compose():
    known = settings_variables() | {"POSTGRES_PASSWORD", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    unknown = set(env_example()) - known
    assert not unknown, f".env.example sets variables nothing reads: {unknown}"


def test_env_example_points_at_the_compose_services():
    env = env_example()
    assert env["DATABASE_URL"].startswith("postgres://") and "@postgres:5432/" in env["DATABASE_URL"]
    assert env["CELERY_BROKER_URL"].startswith("redis://redis:6379")
    assert env["LORASITE_STORAGE"] == "s3" and env["AWS_S3_ENDPOINT_URL"] == "http://minio:9000"
    assert env["DJANGO_DEBUG"] == "0"


def test_readme_documents_every_setting():
    readme = (ROOT / "README.md").read_text()
    missing = sorted(name for name in settings_variables() if f"`{name}`" not in readme)
    assert not missing, f"README does not document: {missing}"


def dockerfile_instructions(name: str) -> list[str]:
    """A Dockerfile's instructions with continuation lines joined, comments left out."""
    text = re.sub(r"\\\n\s*", " ", (ROOT / name).read_text())
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_web_and_beat_run_the_web_image_and_every_worker_the_cuda_worker_image():
    app_services = {name: service for name, service in SERVICES.items() if "build" in service}
    images = {name: (service["build"]["dockerfile"], service["image"]) for name, service in app_services.items()}
    web_image, worker_image = ("Dockerfile", "lorasite-web:latest"), ("Dockerfile.worker", "lorasite-worker:latest")
    assert images == {
        "web": web_image,
        "beat": web_image,
        "worker": worker_image,
        **dict.fromkeys(GPU_WORKERS, worker_image),
    }


def test_the_web_image_installs_only_the_web_requirements():
    installs = [line for line in dockerfile_instructions("Dockerfile") if "pip install" in line]
    assert len(installs) == 1 and "-r requirements/web.txt -c constraints.txt" in installs[0]
    assert "torch" in installs[0]  # the build fails if torch got in anyway
    assert dockerfile_instructions("Dockerfile")[0].startswith("FROM python:3.11-slim")


def test_the_worker_image_is_cuda_with_torchs_cuda_build():
    instructions = dockerfile_instructions("Dockerfile.worker")
    base = next(line for line in instructions if line.startswith("ARG CUDA_IMAGE="))
    assert re.fullmatch(r"ARG CUDA_IMAGE=nvidia/cuda:12\.\d+\.\d+-runtime-ubuntu\d+\.\d+", base)
    assert "FROM ${CUDA_IMAGE}" in instructions
    assert "ARG TORCH_VERSION=2.13.0" in instructions and re.search(
        r"^ARG TORCH_CUDA=cu12\d$", "\n".join(instructions), re.M
    )
    install = next(line for line in instructions if "pip install" in line)
    torch_install, requirements_install = install.split("&&")[:2]
    assert "https://download.pytorch.org/whl/${TORCH_CUDA}" in torch_install
    assert '"torch==${TORCH_VERSION}+${TORCH_CUDA}"' in torch_install
    assert "-r requirements/worker.txt -c constraints.txt" in requirements_install
    assert "torch==2.13.0" in (ROOT / "requirements" / "worker.txt").read_text().splitlines()
