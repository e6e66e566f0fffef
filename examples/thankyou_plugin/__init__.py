"""Thank You Notes: a sample Flint plugin. When an order is paid it thanks the
buyer and notes it on the order; support staff can refund from it. See
README.md beside this file, and "Build your first plugin" in Flint's README."""
