from mlflow_ci.cli import main

raise SystemExit(main())
