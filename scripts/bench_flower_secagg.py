#!/usr/bin/env python3
"""Flower 1.42's SecAgg+ workflow against its default workflow, side by side (BENCHMARKS.md, issue #16).

N simulated clients (Flower's simulation engine, on this machine) each return a fixed float32 update of P
values without training; the server runs FedAvg over R rounds, with SecAggPlusWorkflow or plain. Prints the
median seconds per round after the first. A cross-check only: the product is Swift.

    .venv/bin/pip install "flwr[simulation]"
    .venv/bin/python scripts/bench_flower_secagg.py --nodes 4 --params 13891584 --rounds 3
"""
import argparse, resource, time
import numpy as np
from flwr.client import ClientApp, NumPyClient
from flwr.client.mod import secaggplus_mod
from flwr.common import Context, ndarrays_to_parameters
from flwr.server import Driver, LegacyContext, ServerApp, ServerConfig
from flwr.server.strategy import FedAvg
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
from flwr.simulation import run_simulation

p = argparse.ArgumentParser()
p.add_argument("--nodes", type=int, default=4)
p.add_argument("--params", type=int, default=13_891_584)
p.add_argument("--rounds", type=int, default=3)
p.add_argument("--secure", action="store_true")
a = p.parse_args()

ends = []

class Instant(NumPyClient):
    def __init__(self, i): self.u = (np.random.default_rng(i).standard_normal(a.params) * 1e-3).astype(np.float32)
    def fit(self, parameters, config): return [self.u], 1, {}  # weight 1 (SecAgg+ bounds weights by max_weight)

def client_fn(context: Context):
    return Instant(int(context.node_config["partition-id"])).to_client()

class Timed(FedAvg):
    def aggregate_fit(self, rnd, results, failures):
        r = super().aggregate_fit(rnd, results, failures)
        ends.append(time.time())
        return r

server = ServerApp()

@server.main()
def main(driver: Driver, context: Context) -> None:
    strategy = Timed(fraction_fit=1.0, fraction_evaluate=0.0, min_available_clients=a.nodes, min_fit_clients=a.nodes,
                     initial_parameters=ndarrays_to_parameters([np.zeros(a.params, dtype=np.float32)]))
    ctx = LegacyContext(context=context, config=ServerConfig(num_rounds=a.rounds), strategy=strategy)
    # num_shares counts the node itself; Flower 1.42 failed (IndexError in secaggplus_mod) with an even count (8 of 16).
    shares = a.nodes - 1 if a.nodes <= 8 else 9
    fit = SecAggPlusWorkflow(num_shares=shares, reconstruction_threshold=max(2, (2 * shares) // 3)) if a.secure else None
    DefaultWorkflow(fit_workflow=fit)(driver, ctx)

client = ClientApp(client_fn=client_fn, mods=[secaggplus_mod] if a.secure else [])
t0 = time.time()
run_simulation(server_app=server, client_app=client, num_supernodes=a.nodes, backend_config={"client_resources": {"num_cpus": 1}})
steps = np.diff([t0] + ends)
print({"nodes": a.nodes, "params": a.params, "secure": a.secure, "round_s": [round(x, 2) for x in steps],
       "round_s_median_after_first": round(float(np.median(steps[1:])) if len(steps) > 1 else float("nan"), 2),
       # The server app runs in this process (its clients in Ray's workers): its peak resident set, in MB.
       "server_process_peak_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1000)})
