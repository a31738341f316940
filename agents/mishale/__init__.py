"""What runs at Mishale: the workers (validate, ledger, audit, predict) and the Flower ServerApp."""
