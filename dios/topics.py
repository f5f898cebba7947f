"""The named lifecycle events of the one event hub.

Every event, whoever publishes it, is a :class:`dios.messages.Event` on the engine's
:class:`dios.events.EventHub` (``deviceUri``, ``kind``, ``name``, ``value``, ``data``,
``reqTransaction``, ``reqClientID``, ``timestamp``, ``seq``) and reaches in-process
subscribers, WebSocket clients and MessagePack-RPC notifications in that same envelope.
Devices publish on ``DIOS/DEVICE/<Name>`` (state, param, progress, fault, exposure,
image, reply); the services publish the lifecycle events named here:

=========================== ======================== =================================
name                        URI                      when
=========================== ======================== =================================
``study.registered``        ``DIOS/STUDY/<id>``      a study was registered
``study.updated``           ``DIOS/STUDY/<id>``      its fields, status or lock changed
``study.completed``         ``DIOS/STUDY/<id>``      its status became Completed
``study.deleted``           ``DIOS/STUDY/<id>``      it was deleted
``image.updated``           ``DIOS/STUDY/<id>``      an image's status changed
``image.deleted``           ``DIOS/STUDY/<id>``      images were deleted
``exposure.planned``        ``DIOS/TASK/Exposure``   an image was chosen for the next exposure
``exposure.cancelled``      ``DIOS/TASK/Exposure``   the choice was cancelled
``exposure.started``        ``DIOS/TASK/Exposure``   Expose went to the generator
``exposure.ended``          ``DIOS/TASK/Exposure``   the generator's post-exposure readback
``exposure.failed``         ``DIOS/TASK/Exposure``   the exposure's one outcome: failed
``frame.unassigned``        ``DIOS/TASK/Exposure``   a frame no exposure may take, kept aside
``image.stored``            ``DIOS/TASK/Image``      the exposure's one outcome: stored
``send.queued``             ``DIOS/EXCHANGE/<node>`` an image was queued for a node
``send.sent``               ``DIOS/EXCHANGE/<node>`` the node acknowledged an image
``send.retry``              ``DIOS/EXCHANGE/<node>`` a send failed and will be retried
``send.failed``             ``DIOS/EXCHANGE/<node>`` a send failed for good
=========================== ======================== =================================
"""

STUDY_URI = "DIOS/STUDY/{study_id}"
EXPOSURE_URI = "DIOS/TASK/Exposure"
IMAGE_URI = "DIOS/TASK/Image"
EXCHANGE_URI = "DIOS/EXCHANGE/{node}"

STUDY_REGISTERED = "study.registered"
STUDY_UPDATED = "study.updated"
STUDY_COMPLETED = "study.completed"
STUDY_DELETED = "study.deleted"
IMAGE_UPDATED = "image.updated"
IMAGE_DELETED = "image.deleted"
EXPOSURE_PLANNED = "exposure.planned"
EXPOSURE_CANCELLED = "exposure.cancelled"
EXPOSURE_STARTED = "exposure.started"
EXPOSURE_ENDED = "exposure.ended"
EXPOSURE_FAILED = "exposure.failed"
FRAME_UNASSIGNED = "frame.unassigned"
IMAGE_STORED = "image.stored"
SEND_QUEUED = "send.queued"
SEND_SENT = "send.sent"
SEND_FAILED = "send.failed"
SEND_RETRY = "send.retry"


def study_uri(study_id: object) -> str:
    """The URI of a study's events."""
    return STUDY_URI.format(study_id=study_id)
