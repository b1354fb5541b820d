"""Project 12 (alignment): finetuning, instruction tuning, a reward model, PPO and DPO on the one training driver.

losses   the pure math: GAE, clipped PPO losses, KL estimators k1/k3, the reward-model and DPO losses
data     generated character-level domains, instructions, chat prompts and the gold preference (NumPy)
rlhf     generation, the reward head, the preference-pair task and the on-policy PPO task
"""
