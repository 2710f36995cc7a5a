"""BPR-MF trained with Flower 1.42, every training user a client node, all in this process.

What runs is Flower's own code: the server loop is `flwr.serverapp.strategy.FedAvg.start` (aggregation: FedAvg's
mean, then our server step), the client a `flwr.clientapp.ClientApp`, and everything that travels is a
`flwr.app.Message` of `ArrayRecord` / `MetricRecord` / `ConfigRecord`, serialised to Flower's protobuf wire format
and parsed back on the other side. Ours is `InProcessGrid`, the transport: it hands each message to the ClientApp
with that node's `Context` instead of going through a SuperLink and Flower's Ray-backed simulation engine
(`flwr[simulation]` pins ray 2.55.1, and flwr 1.42 pins fastapi/uvicorn/starlette below what the serving layer
uses, so flwr is installed without its dependencies; see docs/security/federated.md).

The global model is the item factors and item biases; a client's interest vector lives in its node's
`context.state` (Flower's "stays local" store) and is never put into a reply. A client sends its item-model
update; the server adds the number of clients times their equal-weight mean (`SumOfUpdates`), i.e. the sum of
the updates, which is what central training applies in an epoch (one user after another). With `SecAggPlus` the
same round runs under Flower's SecAgg+ workflow and client mod: the server learns only the sum.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.client import NumPyClient
from flwr.client.mod import secaggplus_mod
from flwr.clientapp import ClientApp
from flwr.common import ndarrays_to_parameters, parameters_to_ndarrays
from flwr.common.constant import SUPERLINK_NODE_ID
from flwr.common.serde import message_from_proto, message_to_proto
from flwr.proto.message_pb2 import Message as ProtoMessage
from flwr.server import LegacyContext, ServerConfig
from flwr.server.strategy import FedAvg as LegacyFedAvg
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity

from llmrec_platform.data.interactions import InteractionData, binarize
from llmrec_platform.evaluation.metrics import accuracy_at_k
from llmrec_platform.federated.mf import (
    BPRMFConfig,
    BPRMFRanker,
    initial_item_model,
    initial_user_vector,
    local_update,
    step_generator,
    user_positives,
)
from llmrec_platform.rankers.base import excluded_items, top_k_positions

ITEM_FACTORS, ITEM_BIAS = "item_factors", "item_bias"  # the global model's arrays
INTEREST, USER_VECTOR = "interest", "user_vector"  # the on-device record (context.state) and its array
WEIGHT = "clients"  # the aggregation weight every client reports: 1, so clients count equally
EVAL_K = 10


@dataclass
class Device:
    """What one client holds: its own training items and, for an on-device evaluation, its held-out items."""

    key: int  # seeds its generators: its training position, as in central training
    positives: np.ndarray
    excluded: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    relevant: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))


def item_model_record(item_factors: np.ndarray, item_bias: np.ndarray) -> ArrayRecord:
    return ArrayRecord({ITEM_FACTORS: Array(np.asarray(item_factors, dtype=np.float32)),
                        ITEM_BIAS: Array(np.asarray(item_bias, dtype=np.float32))})


def interest_vector(state: RecordDict, device: Device, config: BPRMFConfig) -> np.ndarray:
    """The device's interest vector: from its node state, or its initial vector before its first round."""
    return state[INTEREST][USER_VECTOR].numpy() if INTEREST in state else initial_user_vector(config, device.key)


def train_on_device(device: Device, state: RecordDict, model: list[np.ndarray], server_round: int, local_epochs: int,
                    config: BPRMFConfig) -> tuple[list[np.ndarray], float]:
    """A client's round: `local_epochs` BPR steps on its own items from the item model it received ([factors,
    biases]). Its interest vector goes back into its node state only; returned are the item-model update (what it
    sends) and the mean BPR loss."""
    item_factors, item_bias = (np.array(array, dtype=np.float32) for array in model)
    vector = interest_vector(state, device, config)
    losses = [local_update(item_factors, item_bias, vector, device.positives,
                           step_generator(config, (server_round - 1) * local_epochs + epoch, device.key), config)
              for epoch in range(local_epochs)]
    state[INTEREST] = ArrayRecord({USER_VECTOR: Array(vector)})
    return [item_factors - model[0], item_bias - model[1]], float(np.mean(losses))


def add_mean_update(model: list[np.ndarray], mean_update: list[np.ndarray], rate: float) -> list[np.ndarray]:
    """The server step of both strategies: model + rate x the clients' equal-weight mean update (rate = number of
    clients: their sum, as central training applies it)."""
    return [(current + rate * update).astype(np.float32) for current, update in zip(model, mean_update, strict=True)]


def client_app(devices: dict[int, Device], config: BPRMFConfig) -> ClientApp:
    """The ClientApp of every node: `devices` stands for each node's local storage (node id -> Device)."""
    app = ClientApp()

    @app.train()
    def train(message: Message, context: Context) -> Message:
        model, config_record = message.content["arrays"], message.content["config"]
        device = devices[context.node_id]
        update, loss = train_on_device(device, context.state, [model[ITEM_FACTORS].numpy(), model[ITEM_BIAS].numpy()],
                                       int(config_record["server-round"]), int(config_record["local-epochs"]), config)
        metrics = MetricRecord({WEIGHT: 1, "num-examples": len(device.positives), "train-loss": loss})
        return Message(RecordDict({"arrays": item_model_record(*update), "metrics": metrics}), reply_to=message)

    @app.evaluate()
    def evaluate(message: Message, context: Context) -> Message:
        """NDCG@10 of this device's own list: all items but the excluded ones ranked, its held-out items relevant."""
        device = devices[context.node_id]
        model = message.content["arrays"]
        scores = interest_vector(context.state, device, config) @ model[ITEM_FACTORS].numpy().T + model[ITEM_BIAS].numpy()
        metrics = {WEIGHT: 0, "ndcg@10": 0.0}
        if len(device.relevant):
            excluded = sp.csr_matrix((np.ones(len(device.excluded), dtype=bool),
                                      (np.zeros(len(device.excluded), dtype=np.int64), device.excluded)),
                                     shape=(1, len(scores)))
            top = top_k_positions(scores[None, :], excluded, EVAL_K)[0]
            hits = np.zeros((1, EVAL_K), dtype=bool)
            hits[0, :len(top)] = np.isin(top, device.relevant)
            metrics = {WEIGHT: 1, "ndcg@10": float(accuracy_at_k(hits, np.array([len(device.relevant)]), EVAL_K)["ndcg"][0])}
        return Message(RecordDict({"metrics": MetricRecord(metrics)}), reply_to=message)

    return app


class SumOfUpdates(FedAvg):
    """Flower's FedAvg over the clients' item-model updates (equal weights: the "clients" metric), followed by the
    server step `add_mean_update`. Replies carry updates, not models: small numbers keep float32 sums exact enough
    and fit SecAgg+'s clipping range."""

    def __init__(self, model: ArrayRecord, server_learning_rate: float, **kwargs):
        super().__init__(weighted_by_key=WEIGHT, **kwargs)
        self.model, self.server_learning_rate = model, server_learning_rate

    def aggregate_train(self, server_round, replies):
        mean_update, metrics = super().aggregate_train(server_round, replies)
        if mean_update is not None:
            current = [self.model[ITEM_FACTORS].numpy(), self.model[ITEM_BIAS].numpy()]
            self.model = item_model_record(*add_mean_update(
                current, [mean_update[ITEM_FACTORS].numpy(), mean_update[ITEM_BIAS].numpy()], self.server_learning_rate))
        return self.model, metrics


def secure_client_app(devices: dict[int, Device], config: BPRMFConfig, clipping_range: float) -> ClientApp:
    """The same device round behind Flower's SecAgg+ client mod (legacy NumPyClient API, which the SecAgg+ workflow
    of flwr 1.42 needs). The client returns its item-model *update*, which the mod clips to +-`clipping_range`,
    quantises and masks; only the masked vector leaves the device. An update outside the range fails the round
    rather than being clipped silently."""

    class DeviceClient(NumPyClient):
        def __init__(self, node: int, state: RecordDict):
            self.node, self.device, self.state = node, devices[node], state

        def fit(self, parameters, fit_config):
            update, _ = train_on_device(self.device, self.state, parameters, int(fit_config["server-round"]),
                                        int(fit_config["local-epochs"]), config)
            largest = max(float(np.abs(u).max(initial=0.0)) for u in update)
            if largest > clipping_range:
                raise ValueError(f"node {self.node}: an item-model update of {largest:.3g} exceeds the SecAgg+ clipping "
                                 f"range {clipping_range}; raise SecAggPlus.clipping_range")
            return update, 1, {}  # weight 1: clients count equally; the loss stays on the device

    def client_fn(context: Context):
        return DeviceClient(context.node_id, context.state).to_client()

    return ClientApp(client_fn=client_fn, mods=[secaggplus_mod])


class LegacySumOfUpdates(LegacyFedAvg):
    """`SumOfUpdates` for the legacy strategy API that the SecAgg+ workflow drives (it sees only the unmasked mean)."""

    def __init__(self, initial: list[np.ndarray], server_learning_rate: float, **kwargs):
        super().__init__(initial_parameters=ndarrays_to_parameters(initial), **kwargs)
        self.model, self.server_learning_rate = [array.copy() for array in initial], server_learning_rate

    def aggregate_fit(self, server_round, results, failures):
        mean_update, metrics = super().aggregate_fit(server_round, results, failures)
        if mean_update is None:
            return None, metrics
        self.model = add_mean_update(self.model, parameters_to_ndarrays(mean_update), self.server_learning_rate)
        return ndarrays_to_parameters(self.model), metrics


@dataclass(frozen=True)
class SecAggPlus:
    """Flower's SecAgg+ (Bell et al. 2020) settings. Each client shares its mask secrets with `num_shares` others
    (an int above 2, or a share of the clients); the server can unmask the sum when `reconstruction_threshold` of
    them answer, and learns only the sum. A client's update must lie within +-`clipping_range` (a round fails
    otherwise); it is quantised to `modulus_range // (clients + 1)` levels over that range, so that the sum over all
    clients fits the modulus: on ML-100K (939 clients) a step of 4.4e-7 per client."""

    num_shares: int | float = 7
    reconstruction_threshold: int | float = 4
    clipping_range: float = 1.0
    modulus_range: int = 2**32

    def __post_init__(self):
        # flwr 1.42 gives a client num_shares // 2 neighbours on each side (plus itself), one share each: an even
        # count fails inside the client mod with an IndexError.
        if isinstance(self.num_shares, int) and self.num_shares % 2 == 0:
            raise ValueError(f"SecAggPlus.num_shares must be odd (it is the client and its neighbours on both sides), "
                             f"got {self.num_shares}")

    def workflow(self, clients: int) -> SecAggPlusWorkflow:
        return SecAggPlusWorkflow(self.num_shares, self.reconstruction_threshold, max_weight=1.0,
                                  clipping_range=self.clipping_range, modulus_range=self.modulus_range,
                                  quantization_range=self.modulus_range // (clients + 1))


class InProcessGrid(Grid):
    """Flower's Grid interface over direct calls: each message goes, through `over_the_wire`, to the ClientApp with
    its node's Context (kept across rounds, as a SuperNode keeps it), in node order so aggregation is deterministic.
    Counts the wire bytes each way and the (record, array, shape) of every array the server receives."""

    def __init__(self, app: ClientApp, node_ids: Iterable[int], run_id: int = 1):
        self.app = app
        self._run = Run.create_empty(run_id)
        self.contexts = {node: Context(run_id=run_id, node_id=node, node_config={}, state=RecordDict(), run_config={})
                         for node in node_ids}
        self._replies: dict[str, Message] = {}
        self.bytes_to_clients = 0
        self.bytes_from_clients = 0
        self.received_arrays: Counter[tuple[str, str, tuple[int, ...]]] = Counter()

    def set_run(self, run: Run) -> None:
        self._run = run

    @property
    def run(self) -> Run:
        return self._run

    def create_message(self, content: RecordDict, message_type: str, dst_node_id: int, group_id: str,
                       ttl: float | None = None) -> Message:
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        return list(self.contexts)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        ids = []
        for message in sorted(messages, key=lambda m: m.metadata.dst_node_id):
            node = message.metadata.dst_node_id
            if node not in self.contexts:
                raise ValueError(f"message to unknown node {node}: this grid holds {len(self.contexts)} nodes")
            message.metadata.__dict__["_message_id"] = uuid.uuid4().hex  # what the SuperLink would assign
            delivered, size = over_the_wire(message)
            self.bytes_to_clients += size
            reply, size = over_the_wire(self.app(delivered, self.contexts[node]))
            if reply.has_error():
                raise RuntimeError(f"node {node} failed on {message.metadata.message_type}: {reply.error.reason}")
            self.bytes_from_clients += size
            for record_name, record in reply.content.array_records.items():
                for array_name, array in record.items():
                    self.received_arrays[(record_name, array_name, tuple(array.shape))] += 1
            self._replies[message.metadata.message_id] = reply
            ids.append(message.metadata.message_id)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return [self._replies.pop(message_id) for message_id in message_ids if message_id in self._replies]

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        return self.pull_messages(self.push_messages(messages))


@contextlib.contextmanager
def server_task(run_id: int) -> Iterator[None]:
    """This process acts as the ServerApp of run `run_id` (Flower's process-wide TaskIdentity, which messages
    are stamped with; Flower's runtime sets it when it starts a ServerApp process), restored afterwards."""
    saved = (TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id)
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = run_id, SUPERLINK_NODE_ID, 0
    try:
        yield
    finally:
        TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id = saved


def over_the_wire(message: Message) -> tuple[Message, int]:
    """The message as its receiver gets it: serialised to Flower's protobuf wire format and parsed back (so no
    object is shared between server and clients), with the size of its bytes."""
    wire = message_to_proto(message).SerializeToString()
    return message_from_proto(ProtoMessage.FromString(wire)), len(wire)


@dataclass
class FederationReport:
    """What a federated training did, for the comparison table and the tests."""

    rounds: int
    clients: int
    seconds: float
    bytes_to_clients: int
    bytes_from_clients: int
    train_loss: dict[int, float]  # round -> the clients' mean BPR loss
    received_arrays: dict[tuple[str, str, tuple[int, ...]], int]  # (record, array, shape) -> how many the server got


class FederatedSimulation:
    """One client node per training user (node id = training position + 1), over an `InProcessGrid`."""

    def __init__(self, train: sp.csr_matrix, config: BPRMFConfig, local_epochs: int = 1,
                 secure: SecAggPlus | None = None):
        if local_epochs < 1:
            raise ValueError(f"local_epochs must be at least 1, got {local_epochs}")
        self.config, self.local_epochs, self.secure, self.n_items = config, local_epochs, secure, train.shape[1]
        self.devices = {user + 1: Device(user, positives)
                        for user, positives in enumerate(user_positives(train)) if len(positives)}
        if len(self.devices) < 2:
            raise ValueError(f"federated training needs at least 2 users with training items, got {len(self.devices)}")
        self.app = client_app(self.devices, config)
        self.grid = InProcessGrid(self.app, self.devices)
        self.item_model = item_model_record(*initial_item_model(self.n_items, config))

    def train(self, rounds: int) -> FederationReport:
        """`rounds` rounds in which every client trains; the server adds up their item-model updates (FedAvgM with
        server learning rate = clients over an equal-weight mean), under SecAgg+ when `secure` is set."""
        if rounds < 1:
            raise ValueError(f"rounds must be at least 1, got {rounds}")
        clients = len(self.devices)
        start = time.perf_counter()
        with server_task(self.grid.run.run_id):
            train_loss = self._train_secure(rounds) if self.secure else self._train_plain(rounds)
        return FederationReport(
            rounds=rounds, clients=clients, seconds=time.perf_counter() - start,
            bytes_to_clients=self.grid.bytes_to_clients, bytes_from_clients=self.grid.bytes_from_clients,
            train_loss=train_loss, received_arrays=dict(self.grid.received_arrays))

    def _train_plain(self, rounds: int) -> dict[int, float]:
        clients = len(self.devices)
        strategy = SumOfUpdates(self.item_model, float(clients), fraction_train=1.0, fraction_evaluate=0.0,
                                min_train_nodes=clients, min_available_nodes=clients)
        result = strategy.start(self.grid, self.item_model, num_rounds=rounds,
                                train_config=ConfigRecord({"local-epochs": self.local_epochs}))
        self.item_model = result.arrays
        return {r: float(m["train-loss"]) for r, m in result.train_metrics_clientapp.items()}

    def _train_secure(self, rounds: int) -> dict[int, float]:
        """Flower's SecAgg+ workflow (the legacy ServerApp workflow API: the one SecAgg+ supports in flwr 1.42) with
        `LegacySumOfUpdates`: the server unmasks only the clients' summed updates. Clients' losses stay on the devices."""
        clients = len(self.devices)
        strategy = LegacySumOfUpdates(list(self.item_factors()), float(clients), fraction_fit=1.0, fraction_evaluate=0.0,
                                 min_fit_clients=clients, min_available_clients=clients,
                                 on_fit_config_fn=lambda r: {"server-round": r, "local-epochs": self.local_epochs})
        server = Context(run_id=self.grid.run.run_id, node_id=SUPERLINK_NODE_ID, node_config={}, state=RecordDict(),
                         run_config={})
        context = LegacyContext(server, config=ServerConfig(num_rounds=rounds), strategy=strategy)
        self.grid.app = secure_client_app(self.devices, self.config, self.secure.clipping_range)
        try:
            DefaultWorkflow(fit_workflow=self.secure.workflow(clients))(self.grid, context)
        finally:
            self.grid.app = self.app
        self.item_model = item_model_record(*context.state.array_records["parameters"].to_numpy_ndarrays())
        return {}

    def item_factors(self) -> tuple[np.ndarray, np.ndarray]:
        return self.item_model[ITEM_FACTORS].numpy(), self.item_model[ITEM_BIAS].numpy()

    def collect_user_vectors(self) -> np.ndarray:
        """Every device's interest vector, read from its node state by this harness (never by the server), so
        that the platform's offline evaluation can score the same users; users without a device get zeros."""
        vectors = np.zeros((max(d.key for d in self.devices.values()) + 1, self.config.factors), dtype=np.float32)
        for node, device in self.devices.items():
            state = self.grid.contexts[node].state
            if INTEREST in state:
                vectors[device.key] = state[INTEREST][USER_VECTOR].numpy()
        return vectors

    def evaluate_on_devices(self, data: InteractionData, fold: str = "test") -> float:
        """Mean NDCG@10 over the devices with items in `fold`, each computed on its device (one Flower evaluation
        round): each device learns its own held-out items and ranks with its own vector; the server gets
        only each device's NDCG@10."""
        excluded, relevant = excluded_items(*data.seen_before(fold)), binarize(data.relevant(fold))
        for device in self.devices.values():
            device.excluded = excluded[device.key].indices.copy()
            device.relevant = relevant[device.key].indices.copy()
        if not any(len(device.relevant) for device in self.devices.values()):
            raise ValueError(f"no device holds a {fold} item: nothing to evaluate")
        clients = len(self.devices)
        evaluation = FedAvg(fraction_train=0.0, fraction_evaluate=1.0, min_evaluate_nodes=clients,
                            min_available_nodes=clients, weighted_by_key=WEIGHT)
        with server_task(self.grid.run.run_id):
            result = evaluation.start(self.grid, self.item_model, num_rounds=1)
        return float(result.evaluate_metrics_clientapp[1]["ndcg@10"])


class FederatedBPRMFRanker(BPRMFRanker):
    """The BPR-MF of `BPRMFRanker` trained federated for `rounds` rounds of `local_epochs` local epochs each
    (rounds x local_epochs epochs in all). After fitting, `federation_` holds the report and `simulation_` the
    simulation (not pickled), for an on-device evaluation."""

    name = "bpr_mf_federated"

    def __init__(self, config: BPRMFConfig | None = None, rounds: int = 20, local_epochs: int = 1,
                 secure: SecAggPlus | None = None):
        super().__init__(config, epochs=rounds * local_epochs)
        self.rounds, self.local_epochs, self.secure = rounds, local_epochs, secure

    def _fit(self, data: InteractionData) -> None:
        simulation = FederatedSimulation(data.train, self.config, self.local_epochs, self.secure)
        self.federation_ = simulation.train(self.rounds)
        self.item_factors_, self.item_bias_ = simulation.item_factors()
        vectors = simulation.collect_user_vectors()
        self.user_factors_ = np.zeros((data.n_users, self.config.factors), dtype=np.float32)
        self.user_factors_[:len(vectors)] = vectors
        self.simulation_ = simulation

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state.pop("simulation_", None)  # closures over the devices: not picklable, and not part of the model
        return state
