"""Pairings: what one training example is (input, target, truth, masks), made per batch on the device."""
