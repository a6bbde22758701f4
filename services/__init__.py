"""The IoT platform's Python services and their shared health kit (`services.common`)."""
