"""Tier 3 local training: the shared model, DP-SGD with FedProx, privacy planning, training data.

Public API (what `serve`, `join` and the benchmarks use):

- `model`: `Mshale1`, `initial_model(seed=0)`, `save_model(path, model, metadata)`, `load_model(path)`,
  `ModelMetadata(version, parent, rounds)`, `model_digest(model)`, `parameters_of(model)`,
  `load_parameters(model, arrays)`
- `local`: `LocalTrainingConfig(...)`, `train_locally(model, features, targets, global_params, config)`
  -> `TrainResult`, `dp_round_shape(num_examples, batch_size, epochs)` -> (sample_rate, steps)
- `planning`: `plan_noise_multiplier(...)`, `PartnerAccountant`, `effective_epsilon(server, partner)`
- `data`: `load_training_data(corpus)` -> `TrainingData`
- `aggregation`: `fedavg(updates, weights)`

Modules import torch; import them where training happens, not from CLI start-up paths. See
README.md beside this file for the decisions.
"""
