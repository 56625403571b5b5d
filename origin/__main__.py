from origin.cli import main

raise SystemExit(main())
