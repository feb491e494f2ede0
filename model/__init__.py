"""The classifier network and the contract checks that keep its head, loss and labels in agreement."""
