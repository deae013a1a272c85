"""Learn a lab's own gating from expert-gated files and apply it to the rest of the archive.

- references: expert gating as training data (per-event labels on our own transform)
- model: a small nearest-neighbour model of the expert's populations, saved as versioned JSON
- evaluate: leave-one-file-out accuracy over the reference files, before a lab trusts it
"""
