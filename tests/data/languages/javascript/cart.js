#!/usr/bin/env node
/**
 * Shopping cart for the web shop.
 * Keeps items and computes totals.
 */

import { applyDiscount, roundPrice as rp } from "./pricing.js";
import * as events from "./events";
import config from "../config/index.js";
export { formatPrice } from "./format";
const path = require("path");
const { readFileSync } = require("./io");

/** Default currency code. */
export const CURRENCY = "EUR";

/**
 * One line of the cart.
 */
export class Item {
  constructor(sku, price, quantity = 1) {
    this.sku = sku;
    this.price = price;
    this.quantity = quantity;
  }
}

// A customer's cart.
export class Cart {
  #items = [];

  /** Add an item, merging with an existing line. */
  add(item) {
    const existing = this.#items.find((i) => i.sku === item.sku);
    if (existing) {
      existing.quantity += item.quantity;
      return;
    }
    this.#items.push(item);
    events.emit("cart.add", item.sku);
  }

  // The total price after discount.
  total(discount = 0) {
    const subtotal = this.#items.reduce((s, i) => s + i.price * i.quantity, 0);
    return rp(applyDiscount(subtotal, discount));
  }

  #audit() {
    console.log(config.name, this.#items.length);
  }
}

/**
 * Load a cart from a JSON file.
 * @param {string} file
 */
export function loadCart(file) {
  const cart = new Cart();
  const data = JSON.parse(readFileSync(path.join(".", file)));
  data.items.forEach((it) => cart.add(new Item(it.sku, it.price)));
  return cart;
}

// Sum of many carts.
const sumCarts = (carts) => carts.map((c) => c.total()).reduce((a, b) => a + b, 0);

function helper() {
  return sumCarts([]);
}

export { sumCarts };
