"""One module per provider; each subclasses `nbchat.core.provider.Provider`."""
