"""The core: value types, provider interface, registry, conversation, errors, sync bridge.

Nothing here imports IPython or widgets.
"""
