from django.apps import AppConfig


class EditorConfig(AppConfig):
    name = "editor"
    verbose_name = "Documents"

    def ready(self) -> None:
        from editor import signals  # noqa: F401  (connects the receivers)
