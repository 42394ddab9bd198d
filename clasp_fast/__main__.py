from clasp_fast.cli import main

raise SystemExit(main())
