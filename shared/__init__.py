"""What a site and the coordinator both import: the data contract, encoding, model, losses, config.

Imports nothing from server/, client/ or simulations/.
"""
