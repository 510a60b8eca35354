// Package cart implements the shopping cart used by checkout.
//
// Carts hold items and compute totals.
package cart

import (
	"errors"
	"fmt"

	"example.com/shop/internal/pricing"
	ev "example.com/shop/events"
)

import "strings"

// ErrEmpty is returned when the cart has no items.
var ErrEmpty = errors.New("empty cart")

// Item is one line of the cart.
type Item struct {
	SKU      string
	Price    float64
	Quantity int
}

// Pricer prices a cart.
type Pricer interface {
	Total(discount float64) (float64, error)
}

type (
	// ID identifies a cart.
	ID string
	state int
)

// Cart is a customer's cart.
type Cart struct {
	Owner string
	items []Item
}

// NewCart makes an empty cart.
func NewCart(owner string) *Cart {
	return &Cart{Owner: strings.TrimSpace(owner)}
}

// Add adds an item, merging with an existing line.
func (c *Cart) Add(item Item) {
	for i := range c.items {
		if c.items[i].SKU == item.SKU {
			c.items[i].Quantity += item.Quantity
			return
		}
	}
	c.items = append(c.items, item)
	ev.Emit("cart.add", item.SKU)
}

// Total is the total price after discount.
func (c Cart) Total(discount float64) (float64, error) {
	if len(c.items) == 0 {
		return 0, ErrEmpty
	}
	sum := 0.0
	for _, it := range c.items {
		sum += it.Price * float64(it.Quantity)
	}
	return pricing.Round(pricing.ApplyDiscount(sum, discount)), nil
}

func (c *Cart) audit() string {
	return fmt.Sprintf("%s: %d items", c.Owner, len(c.items))
}
