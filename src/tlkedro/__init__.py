"""tlkedro: declarative, reproducible transfer learning for brain MRI as Kedro pipelines."""

__version__ = "0.1.0"
