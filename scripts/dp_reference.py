#!/usr/bin/env python3
"""Reference ε values for PrivacyAccountantTests, from Opacus's RDP accountant (a cross-check only).

    .venv/bin/pip install opacus scipy && .venv/bin/python scripts/dp_reference.py
"""
from opacus.accountants.analysis.rdp import compute_rdp, get_privacy_spent

ORDERS = [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64))
INTEGER = list(range(2, 64))
for q, z, t in [(1.0, 1.0, 10), (1.0, 0.5, 100), (1.0, 4.0, 500), (0.1, 1.1, 1000), (0.01, 1.0, 10000), (0.5, 2.0, 100)]:
    orders = ORDERS if q == 1.0 else INTEGER
    eps, order = get_privacy_spent(orders=orders, rdp=compute_rdp(q=q, noise_multiplier=z, steps=t, orders=orders), delta=1e-5)
    print(f"q={q} z={z} rounds={t} delta=1e-5: epsilon={eps!r} (order {order})")
rdp = compute_rdp(q=1.0, noise_multiplier=1.0, steps=5, orders=ORDERS) + compute_rdp(q=1.0, noise_multiplier=2.0, steps=5, orders=ORDERS)
print("5 rounds z=1 then 5 z=2, delta=1e-6:", get_privacy_spent(orders=ORDERS, rdp=rdp, delta=1e-6))
