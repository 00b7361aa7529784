"""Online resolution of floating references for `factory lock`.

The only module that asks the hub and the image registry anything while
locking. Both clients honour their standard environment (HF_ENDPOINT,
HF_TOKEN, DOCKER_HOST), and tokens are never printed.
"""

from __future__ import annotations

from factory.errors import NetworkError


class OnlineResolver:
    def hf_commit(self, repo: str, revision: str) -> str:
        from huggingface_hub import HfApi
        from huggingface_hub.errors import (
            HfHubHTTPError,
            HTTPError,
            OfflineModeIsEnabled,
            RepositoryNotFoundError,
            RevisionNotFoundError,
        )

        try:
            info = HfApi().model_info(repo, revision=revision)
        except RepositoryNotFoundError:
            raise NetworkError(f"model repo {repo} not found (or private without HF_TOKEN)") from None
        except RevisionNotFoundError:
            raise NetworkError(f"revision {revision!r} not found in {repo}") from None
        except OfflineModeIsEnabled:
            raise NetworkError("HF_HUB_OFFLINE is set") from None
        except (HfHubHTTPError, HTTPError, OSError) as exc:
            raise NetworkError(f"hub unreachable ({type(exc).__name__})") from None
        if info.sha is None:
            raise NetworkError(f"the hub gave no commit for {repo}@{revision}")
        return info.sha

    def image_digest(self, image: str) -> str:
        import docker
        from docker.errors import DockerException

        try:
            client = docker.from_env()
            try:
                return str(client.images.get_registry_data(image).id)
            finally:
                client.close()
        except DockerException as exc:
            raise NetworkError(f"cannot ask the registry through the Docker engine ({type(exc).__name__})") from None


class LocalImageResolver(OnlineResolver):
    """Resolves base images to the local engine's image ids (for offline builders
    whose bases come from `docker load`/`docker import`); HF as OnlineResolver."""

    def image_digest(self, image: str) -> str:
        from docker.errors import ImageNotFound

        from factory.runners.engine import docker_client

        client = docker_client()
        try:
            return str(client.images.get(image).id)
        except ImageNotFound:
            raise NetworkError(f"the local engine has no image {image}") from None
        finally:
            client.close()
