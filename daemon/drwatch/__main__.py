from drwatch.cli import main

raise SystemExit(main())
