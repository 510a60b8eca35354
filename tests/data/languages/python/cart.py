#!/usr/bin/env python3
"""Shopping cart: items, totals and discounts.

The cart is the core aggregate of the checkout flow.
"""

from __future__ import annotations

import logging
import os.path as osp
from dataclasses import dataclass, field

from . import events
from .pricing import (
    apply_discount,
    round_price,
)

log = logging.getLogger(__name__)


@dataclass
class Item:
    """One line of the cart."""

    sku: str
    price: float
    quantity: int = 1


class Cart:
    """A customer's cart."""

    def __init__(self, owner: str) -> None:
        self.owner = owner
        self.items: list[Item] = field(default_factory=list)

    def add(self, item: Item) -> None:
        """Add an item, merging with an existing line."""
        for existing in self.items:
            if existing.sku == item.sku:
                existing.quantity += item.quantity
                return
        self.items.append(item)
        events.emit("cart.add", item.sku)

    def total(
        self,
        discount: float = 0.0,
    ) -> float:
        """The total price after discount."""
        subtotal = sum(i.price * i.quantity for i in self.items)
        return round_price(apply_discount(subtotal, discount))

    def _audit(self) -> None:
        def fmt(item: Item) -> str:
            return f"{item.sku} x{item.quantity}"

        log.info("cart %s: %s", self.owner, [fmt(i) for i in self.items])


def load_cart(path: str) -> Cart:
    """Load a cart from a JSON file."""
    cart = Cart(osp.basename(path))
    cart.add(Item("demo", 1.0))
    return cart


def _helper():
    pass
