/**
 * React views for the shopping cart.
 */

import React, { useState } from "react";
import { Cart, Item } from "./cart";
import { formatPrice } from "../format";

/** Props of the cart view. */
export interface CartViewProps {
  cart: Cart;
  onCheckout?: () => void;
}

/** Visual density of a list. */
type Density = "compact" | "comfortable";

/** One row of the cart. */
function ItemRow({ item }: { item: Item }) {
  return (
    <li className="item">
      {item.sku} × {item.quantity} = {formatPrice(item.price * item.quantity)}
    </li>
  );
}

/**
 * The whole cart, with a checkout button.
 */
export function CartView({ cart, onCheckout }: CartViewProps) {
  const [density, setDensity] = useState<Density>("compact");
  return (
    <div className={density}>
      <ul>
        {cart.items.map((item) => (
          <ItemRow key={item.sku} item={item} />
        ))}
      </ul>
      <button onClick={() => setDensity("comfortable")}>Expand</button>
      <button onClick={onCheckout}>Pay {formatPrice(cart.total())}</button>
    </div>
  );
}

/** A class component kept for legacy pages. */
export class LegacyCart extends React.Component<CartViewProps> {
  /** Render the legacy markup. */
  render() {
    return <CartView cart={this.props.cart} />;
  }
}

export const EmptyCart = () => <p>{formatPrice(0)}</p>;

export default CartView;
