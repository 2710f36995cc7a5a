"""Dagster resources: thin, frozen wrappers whose methods return domain objects."""

from llmrec_platform.resources.core import (
    DatasetResource,
    DeviceResource,
    EncoderResource,
    EventLogResource,
    ExperimentResource,
    HomeResource,
    TrackingResource,
    WarehouseResource,
)
from llmrec_platform.resources.io_managers import WarehouseIOManager
from llmrec_platform.resources.ray import ComputeResource

__all__ = [
    "ComputeResource",
    "DatasetResource",
    "DeviceResource",
    "EncoderResource",
    "EventLogResource",
    "ExperimentResource",
    "HomeResource",
    "TrackingResource",
    "WarehouseIOManager",
    "WarehouseResource",
]
