from .entry import train_main

raise SystemExit(train_main())
