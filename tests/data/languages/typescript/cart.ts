/**
 * Shopping cart types and logic.
 */

import { applyDiscount, roundPrice } from "./pricing.js";
import type { Money } from "./money";
import * as events from "./events/index";
import lodash from "lodash";

/** A stock keeping unit. */
export type Sku = string;

/** One line of the cart. */
export interface Item {
  sku: Sku;
  price: Money;
  quantity: number;
}

/** Where a cart is in checkout. */
export enum CartState {
  Open,
  CheckingOut,
  Closed,
}

/** Something that can be priced. */
export abstract class Priced {
  abstract total(discount?: number): Money;
}

/**
 * A customer's cart.
 */
export class Cart extends Priced {
  private items: Item[] = [];
  state: CartState = CartState.Open;

  constructor(public readonly owner: string) {
    super();
  }

  /** Add an item, merging with an existing line. */
  add(item: Item): void {
    const existing = this.items.find((i) => i.sku === item.sku);
    if (existing) {
      existing.quantity += item.quantity;
    } else {
      this.items.push(item);
    }
    events.emit("cart.add", item.sku);
  }

  /** The total price after discount. */
  total(discount = 0): Money {
    const subtotal = this.items.reduce((s, i) => s + i.price * i.quantity, 0);
    return roundPrice(applyDiscount(subtotal, discount));
  }

  private audit(): void {
    console.log(lodash.size(this.items));
  }
}

/** Build a cart for an owner. */
export function makeCart<T extends string>(
  owner: T,
): Cart {
  return new Cart(owner);
}

const internal = (c: Cart): number => c.total();
