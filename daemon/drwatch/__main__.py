from drwatch.cli.main import main

raise SystemExit(main())
