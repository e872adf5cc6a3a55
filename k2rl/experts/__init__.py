"""The experts room: LoRA on MoE experts (attach, merged generation), expert-selective LoRA, the
routing profile, and routing replay. Every PEFT internal it needs goes through :mod:`._peft`."""
