from mailtoaster.cli import main

raise SystemExit(main())
