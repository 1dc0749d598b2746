"""ImageService: PullImage, ImageStatus, ListImages, StreamImages, RemoveImage, ImageFsInfo."""

from __future__ import annotations

import json
import time

from pycrio.cri import api_pb2
from pycrio.image.credentials import credentials_from_cri
from pycrio.image.images import Images, parse_user
from pycrio.image.store import ImageRecord

STREAM_BATCH = 100


class ImageServicer:
    def __init__(self, images: Images):
        self.images = images

    def _image(self, record: ImageRecord) -> api_pb2.Image:
        uid, username = parse_user(record.user)
        image = api_pb2.Image(
            id=record.id,
            repo_tags=record.tags,
            repo_digests=record.digests,
            size=record.size,
            username=username,
            spec=api_pb2.ImageSpec(image=record.id),
            pinned=self.images.is_pinned(record),
        )
        if uid is not None:
            image.uid.value = uid
        return image

    async def PullImage(self, request, context):
        creds = credentials_from_cri(request.auth) if request.HasField("auth") else None
        image_id = await self.images.pull(request.image.image, creds)
        return api_pb2.PullImageResponse(image_ref=image_id)

    async def ImageStatus(self, request, context):
        record = self.images.find(request.image.image)
        if record is None:
            return api_pb2.ImageStatusResponse()  # an absent image is no image, not an error
        info = {}
        if request.verbose:
            info["info"] = json.dumps(
                {
                    "manifestDigest": record.manifest_digest,
                    "indexDigest": record.index_digest,
                    "chainIDs": record.layers,
                    "imageSpec": self.images.config(record),
                }
            )
        return api_pb2.ImageStatusResponse(image=self._image(record), info=info)

    def _matching(self, request) -> list[api_pb2.Image]:
        wanted = request.filter.image.image if request.HasField("filter") else ""
        if wanted:
            record = self.images.find(wanted)
            return [self._image(record)] if record else []
        return [self._image(r) for r in self.images.all()]

    async def ListImages(self, request, context):
        return api_pb2.ListImagesResponse(images=self._matching(request))

    async def StreamImages(self, request, context):
        images = self._matching(request)
        for start in range(0, len(images), STREAM_BATCH):
            yield api_pb2.StreamImagesResponse(images=images[start : start + STREAM_BATCH])

    async def RemoveImage(self, request, context):
        await self.images.remove(request.image.image)  # not found is not an error
        return api_pb2.RemoveImageResponse()

    async def ImageFsInfo(self, request, context):
        now = time.time_ns()
        image_fs, container_fs = self.images.usage()

        def usage(u) -> api_pb2.FilesystemUsage:
            return api_pb2.FilesystemUsage(
                timestamp=now,
                fs_id=api_pb2.FilesystemIdentifier(mountpoint=u.mountpoint),
                used_bytes=api_pb2.UInt64Value(value=u.bytes),
                inodes_used=api_pb2.UInt64Value(value=u.inodes),
            )

        return api_pb2.ImageFsInfoResponse(
            image_filesystems=[usage(image_fs)], container_filesystems=[usage(container_fs)]
        )
