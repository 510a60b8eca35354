//! Shopping cart: items, totals and discounts.
//!
//! The cart is the core aggregate of checkout.

use std::collections::HashMap;
use std::fmt;

use crate::pricing::{apply_discount, round_price};
use super::events::{self, Event};
use self::store::Store as CartStore;

mod store;
pub mod audit;

/// One line of the cart.
#[derive(Debug, Clone)]
pub struct Item {
    pub sku: String,
    pub price: f64,
    pub quantity: u32,
}

/// Something that can be priced.
pub trait Priced {
    /// The total price after discount.
    fn total(&self, discount: f64) -> f64;

    /// Whether the total is zero.
    fn is_free(&self) -> bool {
        self.total(0.0) == 0.0
    }
}

/// Where a cart is in checkout.
pub enum CartState {
    Open,
    Closed,
}

/// A customer's cart.
pub struct Cart {
    owner: String,
    items: HashMap<String, Item>,
}

impl Cart {
    /// Make an empty cart.
    pub fn new(owner: &str) -> Self {
        Cart { owner: owner.to_string(), items: HashMap::new() }
    }

    /// Add an item, merging with an existing line.
    pub fn add(&mut self, item: Item) {
        let entry = self.items.entry(item.sku.clone()).or_insert(item.clone());
        entry.quantity += item.quantity;
        events::emit(Event::Added(item.sku));
    }

    fn audit(&self) -> usize {
        CartStore::count(&self.owner)
    }
}

impl Priced for Cart {
    fn total(&self, discount: f64) -> f64 {
        let sum: f64 = self.items.values().map(|i| i.price * i.quantity as f64).sum();
        round_price(apply_discount(sum, discount))
    }
}

impl fmt::Display for Cart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({} items)", self.owner, self.items.len())
    }
}

/// Shorthand for cart results.
pub type CartResult<T> = Result<T, String>;
